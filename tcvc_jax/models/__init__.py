"""Flax Linen networks: SIGGRAPH17 colorizer, FlowNet2, the classical flow, the TCVC composite."""
