"""Development tools: local runs, local DynamoDB endpoints. Not shipped in the Lambda zip."""
