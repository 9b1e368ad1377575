"""Experiment specs: schema, loading, inheritance, overrides."""
from .convert import from_dict, to_dict
from .load import apply_override, deep_merge, dump_spec, load_spec, load_tree
from .schema import (AESpec, BetaVAESpec, ChainGraphSpec, ConvDecoderSpec, ConvEncoderSpec, DagGraphSpec, DataSpec,
                     DecoderSpec, EncoderSpec, EvaluateSpec, ExpertsGraphSpec, GraphSpec, LearnedGraphSpec, ModelSpec,
                     SAESpec, Spec, StructuralDecoderSpec, TrackSpec, TrainSpec, VAESpec)
