"""Human-readable class names of every dataset, in label order, for what a deployed model prints.

In-memory sets have fixed names; folder sets (ImageNet, `--dataset folder`) take the sorted
class-folder names of `train/` (what ImageFolder numbers the labels by), and fall back to
`class_<k>` when that folder is not at hand.
"""

from __future__ import annotations

from pathlib import Path

from boostnet.data.datasets import DatasetInfo

FASHION_MNIST = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR100 = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
    "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile "
    "cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp "
    "lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree "
    "orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum "
    "rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider "
    "squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train "
    "trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
FIXED = {
    "cifar100": tuple(CIFAR100),
    "fashion_mnist": FASHION_MNIST,
    "fashion_mnist_mini": FASHION_MNIST,
    "digits": tuple(str(digit) for digit in range(10)),
}


def class_names(info: DatasetInfo, root: Path) -> list[str]:
    """The `info.num_classes` names of the dataset's labels, in label order."""
    if info.name in FIXED:
        return list(FIXED[info.name])
    train = Path(root) / "train"
    folders = sorted(entry.name for entry in train.iterdir() if entry.is_dir()) if train.is_dir() else []
    if len(folders) == info.num_classes:
        return folders
    return [f"class_{label}" for label in range(info.num_classes)]
