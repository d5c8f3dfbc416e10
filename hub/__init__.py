"""The programme hub: results from many agents, a programme dashboard, signed model rollout, data back.

Agents connect out to it (factories rarely allow inbound connections). The hub reaches agents over the
network only; it reuses the agent's wire protocol modules (`contract.zmq_wire`, `zmq_security`, the
reference MES receiver loop) rather than a second copy of the protocol.
"""
