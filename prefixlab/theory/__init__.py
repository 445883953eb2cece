"""Theory: prefix identities, Petrov's constructions, capacity counts and Wang's limitations, all written as
weights of the project's own Transformer."""

from prefixlab.theory.attention import LayerIdentity, attention_identities, identity_summary, random_context
from prefixlab.theory.randomize import randomize_params
