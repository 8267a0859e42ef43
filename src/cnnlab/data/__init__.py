"""Data: on-disk formats -> in-memory uint8 tensors -> batched augmentation."""
