"""The model: values and rules, no I/O and no settings of its own.

attributes (JSON <-> DynamoDB attribute values, within DynamoDB's limits),
arns (keys and ECS ARNs), clock (ISO times), lifecycle (phase, expiry, the
creation window) and changes (a state at one version, as the item it stores).
"""
