# Included after SQLite's generated Makefile by run.sh to read its variables:
# `make -f Makefile -f printvar.mk tpdb-print-NAME` prints $(NAME).
tpdb-print-%:
	@echo '$($*)'
