"""ecs-state's shared code: everything app.py's handlers need, and nothing they don't."""
