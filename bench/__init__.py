"""`make bench`: ecs-state against a conditional-put floor and the ECS docs example. Not shipped."""
