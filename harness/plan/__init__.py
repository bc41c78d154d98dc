"""What a cell should cost by the book: the memory plan and the roofline."""
