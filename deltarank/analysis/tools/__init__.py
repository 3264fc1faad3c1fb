"""The subspace tools, built on the engine's plan and loader: intruders, similarity, extract."""
