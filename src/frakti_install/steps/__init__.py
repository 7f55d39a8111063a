"""One module per step; plans.py puts them in order."""
