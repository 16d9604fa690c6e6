"""Gender encoding, stratified split and the preprocessing pipeline."""
