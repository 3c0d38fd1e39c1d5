"""The data: the CIFAR-10 test set (fetched with checksums, read without running code) and the check
sets every backend is compared on. Numpy only: both sides of the process boundary read these."""
