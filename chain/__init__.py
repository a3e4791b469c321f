"""collab's Python side of the chain: compile, run anvil, deploy, typed contract clients.

Entry points: :mod:`chain.compiler` (``compile_contracts``), :mod:`chain.anvil`
(``AnvilProcess``), :mod:`chain.client` (``connect``, ``ContractClient``),
:mod:`chain.deploy` (``deploy_all``), :mod:`chain.deployment` (``Deployment``)
and :mod:`chain.node` (what ``collab chain up|status|down|deploy`` runs).
"""
