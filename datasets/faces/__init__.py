"""Face photos, real or rendered: the landmark edit model the portrait editor applies to a user's photo."""
