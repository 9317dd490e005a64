"""Code shared by the edge workers and the Lambda functions. Standard library only."""
