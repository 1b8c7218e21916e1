"""The HTTP API behind app.py's routes: reads (the recorded state: listings and single items)
and events_route (POST /events, in the local stage only). Imported on the first request:
the event and reconcile functions never serve one, so their cold starts skip it."""
