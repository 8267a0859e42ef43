"""cnnlab: train, compare and explain CNNs on small image data sets."""
