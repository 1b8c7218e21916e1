"""Reconcile: heal the tables from the ECS API, and find the items ECS no longer knows.

ecs (the API as a pass reads it: paged, 100 per Describe, paced), snapshots
(an API object in the shape of its event, checked as an event is) and passes
(a pass over the account: snapshots, ghosts, the time budget). Imported only
by the reconcile function: the event functions' cold starts skip it.
"""
