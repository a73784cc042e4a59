"""The customer service: who the customer is and what they bought."""
