"""One ``APIRouter`` per area: predictions, feedback, operations, administration."""
