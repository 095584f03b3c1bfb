module github.com/tidemark/tidemark-go

go 1.19
