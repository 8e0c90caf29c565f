"""Training rows of each format as the trainers read them.
"""
