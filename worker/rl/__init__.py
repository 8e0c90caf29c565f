"""Reinforcement learning pieces of our own (PPO; trl removed its PPOTrainer in 1.13)."""
