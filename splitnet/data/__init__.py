"""What the models learn from and are measured on.

    fashion_mnist   the four IDX files (the Debian package dataset-fashion-mnist)
    imagenette      Imagenette in the ImageFolder layout, decoded and cached as arrays
    download        fetch, check and resize Imagenette (python -m splitnet.data.download)
    eval_sets       which images each number is measured on: the card's held-apart
                    images, and the evaluation images nothing was tuned on
"""


class DatasetNotFoundError(FileNotFoundError):
    """A data set is not where we looked; the message says how to get it."""
