"""Judging: answer extraction and equivalence, arithmetic claims, sandboxed code, PRMs, rewards."""
