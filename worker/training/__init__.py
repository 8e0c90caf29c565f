"""The training child and what every objective shares: its job context, model loading, trainer
glue, saving and publishing results.
"""
