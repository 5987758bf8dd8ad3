module thumbnailer

go 1.22
