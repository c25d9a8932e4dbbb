"""The console's panels, one package per screen region."""
