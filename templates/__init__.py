"""headstream's non-Python files (report page template, Flex Template), installed as `headstream_templates`."""
