"""Model zoo: `build_model(args)` turns parsed flags into a multi-exit network."""
from __future__ import annotations

import argparse

from boostnet.data.datasets import dataset_info

from .multi_exit import MultiExitNetwork, param_groups_by_stage, select_samples
from .msdnet import MSDNet, MSDNetConfig

__all__ = ["MultiExitNetwork", "build_model", "param_groups_by_stage", "select_samples"]


def build_model(args: argparse.Namespace) -> MultiExitNetwork:
    """Build the backbone `args` describes (as returned by `args.parse_args`): `model(x)` gives
    every exit's raw logits f_n; models.boosting.BoostedNetwork turns them into predictions."""
    info = dataset_info(args)
    if args.arch in ("msdnet", "msdnet_ge"):
        return MSDNet(MSDNetConfig(
            nBlocks=args.nBlocks, base=args.base, step=args.step, stepmode=args.stepmode,
            nChannels=args.nChannels, growthRate=args.growthRate, grFactor=tuple(args.grFactor),
            bnFactor=tuple(args.bnFactor), prune=args.prune, reduction=args.reduction,
            bottleneck=args.bottleneck, num_classes=info.num_classes, imagenet=info.imagenet_style,
            gradient_rescale=args.arch == "msdnet_ge"))
    if args.arch == "ranet":
        from .ranet import RANet, RANetConfig
        return RANet(RANetConfig(
            nBlocks=args.nBlocks, block_step=args.block_step, step=args.step,
            stepmode=args.stepmode, nChannels=args.nChannels, growthRate=args.growthRate,
            grFactor=tuple(args.grFactor), bnFactor=tuple(args.bnFactor),
            scale_list=tuple(args.scale_list), compress_factor=args.compress_factor,
            reduction=args.reduction, bottleneck=args.bottleneck, num_classes=info.num_classes,
            imagenet=info.imagenet_style))
    raise ValueError(f"unknown --arch {args.arch!r}")
