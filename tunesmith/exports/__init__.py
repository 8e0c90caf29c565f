"""Exports: a fine-tuned model written out in a format to ship (DESIGN §8 "Exports")."""
