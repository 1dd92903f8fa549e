"""The layer API: errors, state_dict, streaming steps, awkward inputs, backend selection."""
