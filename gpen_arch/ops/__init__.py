"""Low-level ops of GPEN: FIR filtering, the biased leaky ReLU and the modulated convolution."""
