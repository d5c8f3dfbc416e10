"""The programme hub: results from many agents, a programme dashboard, signed model rollout, data back.

Agents connect out to it (factories rarely allow inbound connections). The hub reaches agents over the
network only; it imports `contract` (wire format, CURVE, model signing), `mes` (the reference receiver
loop) and `vision`, never `edge_agent`: one copy of the protocol, shared with the agents.
"""
