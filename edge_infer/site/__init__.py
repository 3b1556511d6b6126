"""check-site: does the model fit this lab's microscope?"""
