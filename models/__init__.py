"""Model zoo: `build_model(args)` turns parsed flags into a multi-exit network."""
from __future__ import annotations

import argparse

from .multi_exit import MultiExitNetwork, param_groups_by_stage, select_samples
from .msdnet import MSDNet, MSDNetConfig

NUM_CLASSES = {"cifar100": 100, "imagenet": 1000, "digits": 10}

__all__ = ["MultiExitNetwork", "build_model", "param_groups_by_stage", "select_samples",
           "NUM_CLASSES", "is_imagenet_sized"]


def is_imagenet_sized(args: argparse.Namespace) -> bool:
    """ImageNet uses 224x224 inputs and the ImageNet stem/heads; everything else is 32x32."""
    return args.dataset == "imagenet"


def build_model(args: argparse.Namespace) -> MultiExitNetwork:
    """Build the network described by `args` (as returned by `args.parse_args`)."""
    num_classes = NUM_CLASSES[args.dataset]
    imagenet = is_imagenet_sized(args)
    if args.arch in ("msdnet", "msdnet_ge"):
        return MSDNet(MSDNetConfig(
            nBlocks=args.nBlocks, base=args.base, step=args.step, stepmode=args.stepmode,
            nChannels=args.nChannels, growthRate=args.growthRate, grFactor=tuple(args.grFactor),
            bnFactor=tuple(args.bnFactor), prune=args.prune, reduction=args.reduction,
            bottleneck=args.bottleneck, num_classes=num_classes, imagenet=imagenet,
            gradient_rescale=args.arch == "msdnet_ge"))
    if args.arch == "ranet":
        from .ranet import RANet, RANetConfig
        return RANet(RANetConfig(
            nBlocks=args.nBlocks, block_step=args.block_step, step=args.step,
            stepmode=args.stepmode, nChannels=args.nChannels, growthRate=args.growthRate,
            grFactor=tuple(args.grFactor), bnFactor=tuple(args.bnFactor),
            scale_list=tuple(args.scale_list), compress_factor=args.compress_factor,
            reduction=args.reduction, bottleneck=args.bottleneck, num_classes=num_classes,
            imagenet=imagenet))
    raise ValueError(f"unknown --arch {args.arch!r}")
