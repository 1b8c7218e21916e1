"""Ingest: an EventBridge event in, one conditional write, a log line and a metric out.

events (the envelope checked, the item built), recorder (what every event
handler calls) and dead_letters (an event that can never be stored, sent to
the stage's queue at once).
"""
