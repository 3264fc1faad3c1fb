"""Pure maths on tensors and arrays: delta forms, SVDs, rank measures, the noise model, the Gaussian
reference. No I/O, no threads."""
