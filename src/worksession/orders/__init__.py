"""Work orders, their offers to providers, and the first-accept-wins acceptance."""
