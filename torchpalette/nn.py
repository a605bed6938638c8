"""nn.Module quantizer layers (placeholder; issue 6)."""
