"""A module per area: an ``APIRouter`` each for feedback, operations and administration;
the hot prediction routes are added to the app itself (``predict.add_routes``)."""
