"""The paper's recipes, written once: what the shell scripts, `--recipe`, the benchmark and the
tests read (docs/recipes.md).

A recipe is a dataset, training flags and how its run is evaluated. `--recipe NAME` on a
training entry point takes the recipe's flags as defaults; flags typed on the command line
override them. `python -m boostnet.recipes NAME` prints the training entry point's dataset
family and the evaluation flags, one line, for scripts/recipe_lib.sh.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional, Sequence

CIFAR_TRAINING = (
    "--loss",
    "boost",
    "--ensemble_reweight",
    "0.5",
    "--batch-size",
    "64",
    "--epochs",
    "300",
    "--lr",
    "0.1",
    "--lr_milestones",
    "150,225",
    "--lr_gamma",
    "0.1",
    "--momentum",
    "0.9",
    "--weight-decay",
    "1e-4",
)
IMAGENET_TRAINING = (
    "--loss",
    "boost",
    "--ensemble_reweight",
    "0.5",
    "--batch-size",
    "64",
    "--epochs",
    "90",
    "--lr",
    "0.1",
    "--lr_milestones",
    "30,60",
    "--lr_gamma",
    "0.1",
    "--momentum",
    "0.9",
    "--weight-decay",
    "1e-4",
)
MSDNET_C100 = ("--arch", "msdnet_ge", "--stepmode", "even", "--step", "2", "--base", "4", "--nChannels", "16")
RANET_C100_BUDGETED = (
    "--arch",
    "ranet",
    "--nBlocks",
    "2",
    "--stepmode",
    "lin_grow",
    "--step",
    "2",
    "--nChannels",
    "16",
    "--use-valid",
)
MSDNET_IMAGENET = (
    "--arch",
    "msdnet_ge",
    "--nBlocks",
    "5",
    "--stepmode",
    "even",
    "--nChannels",
    "32",
    "--growthRate",
    "16",
    "--grFactor",
    "1-2-4-4",
    "--bnFactor",
    "1-2-4-4",
)
RANET_IMAGENET = (
    "--arch",
    "ranet",
    "--nBlocks",
    "2",
    "--stepmode",
    "even",
    "--step",
    "8",
    "--growthRate",
    "16",
    "--scale-list",
    "1-2-3-4",
    "--grFactor",
    "4-2-2-1",
    "--bnFactor",
    "4-2-2-1",
)
# Not a paper recipe: a modern backbone sized for a CPU, a timm ResNet-18 with its default four
# exits (one per stage) on Fashion-MNIST (32 px), trained from scratch with the CIFAR schedule
# shape (SGD, steps at 50% and 80%) over 10 epochs (docs/recipes.md).
TIMM_RESNET18_FASHION = (
    "--arch",
    "timm:resnet18",
    "--num-exits",
    "4",
    "--loss",
    "boost",
    "--ensemble_reweight",
    "0.5",
    "--batch-size",
    "128",
    "--epochs",
    "10",
    "--lr",
    "0.05",
    "--lr_milestones",
    "5,8",
    "--lr_gamma",
    "0.1",
    "--momentum",
    "0.9",
    "--weight-decay",
    "5e-4",
    "--use-valid",
)
# Budgeted-batch runs are evaluated like the original code's budgeted scripts: flat curve.
ANYTIME = ("--evalmode", "anytime")
BUDGETED = ("--evalmode", "both", "--flat_curve")


@dataclass(frozen=True)
class Recipe:
    """One paper recipe: training flags (dataset included), evaluation flags, GPUs it assumes."""

    name: str
    dataset: str
    flags: tuple[str, ...]
    eval_flags: tuple[str, ...]
    gpus: int = 1

    @property
    def training_flags(self) -> tuple[str, ...]:
        return ("--dataset", self.dataset, *self.flags)


def cifar100(name: str, *flags: str, budgeted: bool = False) -> Recipe:
    return Recipe(name, "cifar100", (*CIFAR_TRAINING, *flags), BUDGETED if budgeted else ANYTIME)


def imagenet(name: str, *flags: str, budgeted: bool = False) -> Recipe:
    return Recipe(
        name,
        "imagenet",
        (*IMAGENET_TRAINING, *flags, *(("--use-valid",) if budgeted else ())),
        BUDGETED if budgeted else ANYTIME,
        gpus=4,
    )


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        cifar100("msdnet_cifar100_anytime", *MSDNET_C100, "--nBlocks", "10"),
        cifar100("msdnet_cifar100_budgeted", *MSDNET_C100, "--nBlocks", "6", "--use-valid", budgeted=True),
        cifar100(
            "ranet_cifar100_anytime",
            "--arch",
            "ranet",
            "--nBlocks",
            "2",
            "--stepmode",
            "even",
            "--step",
            "4",
            "--nChannels",
            "16",
            "--scale-list",
            "1-2-3-3",
            "--grFactor",
            "4-2-1-1",
            "--bnFactor",
            "4-2-1-1",
        ),
        cifar100(
            "ranet_cifar100_budgeted_model1",
            *RANET_C100_BUDGETED,
            "--scale-list",
            "1-2-3",
            "--grFactor",
            "4-2-1",
            "--bnFactor",
            "4-2-1",
            budgeted=True,
        ),
        cifar100(
            "ranet_cifar100_budgeted_model2",
            *RANET_C100_BUDGETED,
            "--scale-list",
            "1-2-2-3",
            "--grFactor",
            "4-2-2-1",
            "--bnFactor",
            "4-2-2-1",
            budgeted=True,
        ),
        cifar100(
            "ranet_cifar100_budgeted_model3",
            *RANET_C100_BUDGETED,
            "--scale-list",
            "1-2-3-3",
            "--grFactor",
            "4-2-1-1",
            "--bnFactor",
            "4-2-1-1",
            budgeted=True,
        ),
        imagenet("msdnet_imagenet_anytime", *MSDNET_IMAGENET, "--step", "7", "--base", "7"),
        imagenet("msdnet_imagenet_budgeted", *MSDNET_IMAGENET, "--step", "5", "--base", "5", budgeted=True),
        imagenet("ranet_imagenet_anytime", *RANET_IMAGENET, "--nChannels", "64"),
        imagenet("ranet_imagenet_budgeted_c32", *RANET_IMAGENET, "--nChannels", "32", budgeted=True),
        imagenet("ranet_imagenet_budgeted_c64", *RANET_IMAGENET, "--nChannels", "64", budgeted=True),
        Recipe("timm_resnet18_fashion_mnist", "fashion_mnist", TIMM_RESNET18_FASHION, BUDGETED),
    )
}


def entry_point_family(recipe: Recipe) -> str:
    """'imagenet' for recipes trained by train_imagenet.py under torchrun, else 'cifar100'."""
    return "imagenet" if recipe.gpus > 1 else "cifar100"


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Print `FAMILY EVAL_FLAGS...` of the named recipe (for the shell scripts)."""
    from utils.cli import OneLineParser

    parser = OneLineParser(
        prog="python -m boostnet.recipes",
        description="Print the training entry point's dataset family (cifar100 "
        "or imagenet) and the evaluation flags of a paper recipe, "
        "one line, for scripts/recipe_lib.sh (docs/recipes.md).",
    )
    parser.add_argument(
        "name", metavar="NAME", choices=list(RECIPES), help=f"the recipe, one of {', '.join(RECIPES)}"
    )
    recipe = RECIPES[parser.parse_args(sys.argv[1:] if argv is None else argv).name]
    print(" ".join((entry_point_family(recipe), *recipe.eval_flags)))


if __name__ == "__main__":
    main()
