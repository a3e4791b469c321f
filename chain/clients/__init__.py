"""Typed clients, one per collab contract (``chain/clients/<snake_name>.py``).

Each module wraps one contract's external functions in typed methods and
decodes its structs and events into dataclasses; import the module you need
(``from chain.clients.identity_registry import IdentityRegistryClient``).
Nothing is imported here, so loading one client never loads the others.
"""
