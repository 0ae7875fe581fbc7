"""Model families. Each module registers its presets on import (see mmgen.registry)."""
