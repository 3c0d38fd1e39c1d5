"""The user's Keras file, read as plain data with h5py and zipfile — never with Keras, so nothing in it
runs: the safety check (`safety`), the layer graph (`graph`), the weights (`weights`), damaged-file
checks (`checks`), and `KerasModel`, which holds them all for one file. Both sides of the process boundary read these."""
