"""The book's helpers: exercise checkers (`checks`), pictures (`viz`) and the chapter banner (`env`)."""
