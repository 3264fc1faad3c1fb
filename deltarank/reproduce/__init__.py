"""`deltarank reproduce`: the "LoRA Learns Less and Forgets Less" finding end to end on the default model."""
