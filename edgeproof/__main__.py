from edgeproof.cli.main import entry

entry()
