"""Encoders that turn raw modalities into fixed-size vectors: clinical notes (a frozen Hugging Face text model
with an on-disk cache); imaging encoders live beside it."""

from migpt_traj.encoders.notes import DEFAULT_NOTE_MODEL, NoteEncoder, NoteEncoderConfig, default_cache_dir

__all__ = ["DEFAULT_NOTE_MODEL", "NoteEncoder", "NoteEncoderConfig", "default_cache_dir"]
