"""Theory: prefix identities, Petrov's constructions, capacity counts and Wang's limitations, all written as
weights of the project's own Transformer."""

from prefixlab.theory.attention import LayerIdentity, attention_identities, identity_summary, random_context
from prefixlab.theory.randomize import randomize_params
from prefixlab.theory.constructions import conditional, decoder_head, responses, two_token, unconditional
from prefixlab.theory.limits import decoder_exact, max_vocab_decoder, max_vocab_two_token, measured_decoder_limit
from prefixlab.theory.capacity import capacity_count
from prefixlab.theory import wang, wang_scan
from prefixlab.theory.lbfgs import lbfgs_min
