"""The policy before RL: the cold start that takes a tiny model from random weights to the search protocol."""
