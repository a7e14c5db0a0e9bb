"""Validation against PyTorch: exactness (exact.py), measurement (measure.py),
comparison and calibration (compare.py, calibrate.py).

Importing this package does not import torch; torch_build, exact and measure
do (``pip install costmodel[validate]``). compare and calibrate work on
recorded JSON with the core dependencies only.
"""
