"""Operations on the node itself: its git checkout, provider registries, connectivity probes (pure Python)."""
