"""PTransforms and DoFns, one concern per module, with the plain pixel functions beside them."""
