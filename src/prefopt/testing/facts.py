"""Real-world facts for the Factual-DPO miniature (``examples/factual_smollm2``, ``prefopt demo
--real``): each with its correct short answer and a
fluent wrong one (a plausible confusion: a country's largest city, a neighbour's symbol, the
author of a similar book, a year off by a little).

A :class:`Fact` has a question, a statement template with ``{}`` where the answer goes (so the
correct and the wrong answer are the same fluent sentence but for the answer), the gold answer,
the wrong answer and aliases (other spellings that the gold judge also accepts). Gold years and
counts are written as digits; the judge reads number words as digits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Fact:
    category: str
    question: str
    statement: str  # "The capital of Australia is {}."
    answer: str
    wrong: str
    aliases: tuple[str, ...] = ()

    @property
    def correct_text(self) -> str:
        return self.statement.format(self.answer)

    @property
    def wrong_text(self) -> str:
        return self.statement.format(self.wrong)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _templated(
    category: str, question: str, statement: str, rows: list[tuple[str, ...]]
) -> list[Fact]:
    """Facts of one category: ``(subject, answer, wrong, *aliases)`` rows."""
    facts = []
    for subject, answer, wrong, *aliases in rows:
        facts.append(
            Fact(
                category,
                question.format(subject),
                _cap(statement.replace("{s}", subject).replace("{S}", _cap(subject))),
                answer,
                wrong,
                tuple(aliases),
            )
        )
    return facts


def _custom(category: str, rows: list[tuple[str, ...]]) -> list[Fact]:
    """Facts with their own wording: ``(question, statement, answer, wrong, *aliases)`` rows."""
    return [Fact(category, q, s, a, w, tuple(al)) for q, s, a, w, *al in rows]


CAPITALS: list[tuple[str, ...]] = [
    ("France", "Paris", "Lyon"),
    ("Germany", "Berlin", "Munich"),
    ("Italy", "Rome", "Milan"),
    ("Spain", "Madrid", "Barcelona"),
    ("Portugal", "Lisbon", "Porto"),
    ("the United Kingdom", "London", "Manchester"),
    ("Ireland", "Dublin", "Cork"),
    ("the Netherlands", "Amsterdam", "Rotterdam"),
    ("Belgium", "Brussels", "Antwerp"),
    ("Switzerland", "Bern", "Zurich", "Berne"),
    ("Austria", "Vienna", "Salzburg"),
    ("Poland", "Warsaw", "Krakow"),
    ("the Czech Republic", "Prague", "Brno"),
    ("Hungary", "Budapest", "Debrecen"),
    ("Greece", "Athens", "Thessaloniki"),
    ("Turkey", "Ankara", "Istanbul"),
    ("Russia", "Moscow", "Saint Petersburg"),
    ("Ukraine", "Kyiv", "Kharkiv", "Kiev"),
    ("Sweden", "Stockholm", "Gothenburg"),
    ("Norway", "Oslo", "Bergen"),
    ("Denmark", "Copenhagen", "Aarhus"),
    ("Finland", "Helsinki", "Tampere"),
    ("Iceland", "Reykjavik", "Akureyri"),
    ("Romania", "Bucharest", "Cluj-Napoca"),
    ("Bulgaria", "Sofia", "Plovdiv"),
    ("Serbia", "Belgrade", "Novi Sad"),
    ("Croatia", "Zagreb", "Split"),
    ("Scotland", "Edinburgh", "Glasgow"),
    ("Wales", "Cardiff", "Swansea"),
    ("Egypt", "Cairo", "Alexandria"),
    ("Nigeria", "Abuja", "Lagos"),
    ("Kenya", "Nairobi", "Mombasa"),
    ("Morocco", "Rabat", "Casablanca"),
    ("Ethiopia", "Addis Ababa", "Dire Dawa"),
    ("Ghana", "Accra", "Kumasi"),
    ("Tanzania", "Dodoma", "Dar es Salaam"),
    ("Algeria", "Algiers", "Oran"),
    ("Tunisia", "Tunis", "Sfax"),
    ("Senegal", "Dakar", "Touba"),
    ("Cameroon", "Yaounde", "Douala"),
    ("Canada", "Ottawa", "Toronto"),
    ("the United States", "Washington, D.C.", "New York City", "Washington"),
    ("Mexico", "Mexico City", "Guadalajara"),
    ("Brazil", "Brasilia", "Rio de Janeiro"),
    ("Argentina", "Buenos Aires", "Cordoba"),
    ("Chile", "Santiago", "Valparaiso"),
    ("Peru", "Lima", "Cusco"),
    ("Colombia", "Bogota", "Medellin"),
    ("Venezuela", "Caracas", "Maracaibo"),
    ("Ecuador", "Quito", "Guayaquil"),
    ("Uruguay", "Montevideo", "Salto"),
    ("Cuba", "Havana", "Santiago de Cuba"),
    ("Jamaica", "Kingston", "Montego Bay"),
    ("China", "Beijing", "Shanghai", "Peking"),
    ("Japan", "Tokyo", "Osaka"),
    ("South Korea", "Seoul", "Busan"),
    ("India", "New Delhi", "Mumbai"),
    ("Pakistan", "Islamabad", "Karachi"),
    ("Bangladesh", "Dhaka", "Chittagong"),
    ("Thailand", "Bangkok", "Chiang Mai"),
    ("Vietnam", "Hanoi", "Ho Chi Minh City"),
    ("the Philippines", "Manila", "Cebu City"),
    ("Malaysia", "Kuala Lumpur", "George Town"),
    ("Saudi Arabia", "Riyadh", "Jeddah"),
    ("Iran", "Tehran", "Isfahan"),
    ("Iraq", "Baghdad", "Basra"),
    ("Afghanistan", "Kabul", "Kandahar"),
    ("Australia", "Canberra", "Sydney"),
    ("New Zealand", "Wellington", "Auckland"),
    ("Mongolia", "Ulaanbaatar", "Darkhan", "Ulan Bator"),
    ("Nepal", "Kathmandu", "Pokhara"),
    ("Myanmar", "Naypyidaw", "Yangon", "Nay Pyi Taw"),
    ("Kazakhstan", "Astana", "Almaty"),
    ("Syria", "Damascus", "Aleppo"),
    ("Lebanon", "Beirut", "Tripoli"),
    ("Jordan", "Amman", "Zarqa"),
    ("Qatar", "Doha", "Al Rayyan"),
    ("the United Arab Emirates", "Abu Dhabi", "Dubai"),
]

SYMBOLS: list[tuple[str, ...]] = [
    ("gold", "Au", "Ag"),
    ("silver", "Ag", "Si"),
    ("iron", "Fe", "Ir"),
    ("sodium", "Na", "So"),
    ("potassium", "K", "P"),
    ("lead", "Pb", "Ld"),
    ("copper", "Cu", "Co"),
    ("tin", "Sn", "Ti"),
    ("mercury", "Hg", "Me"),
    ("tungsten", "W", "Tu"),
    ("oxygen", "O", "Ox"),
    ("carbon", "C", "Ca"),
    ("nitrogen", "N", "Ni"),
    ("helium", "He", "Hl"),
    ("calcium", "Ca", "Cl"),
    ("chlorine", "Cl", "Ch"),
    ("sulfur", "S", "Su"),
    ("phosphorus", "P", "Ph"),
    ("magnesium", "Mg", "Mn"),
    ("manganese", "Mn", "Mg"),
    ("zinc", "Zn", "Zi"),
    ("nickel", "Ni", "Nk"),
    ("aluminium", "Al", "Am"),
    ("silicon", "Si", "Sc"),
    ("neon", "Ne", "Nn"),
    ("argon", "Ar", "Ag"),
    ("uranium", "U", "Ur"),
    ("platinum", "Pt", "Pl"),
    ("antimony", "Sb", "An"),
    ("lithium", "Li", "Lt"),
    ("fluorine", "F", "Fl"),
    ("cobalt", "Co", "Cb"),
    ("chromium", "Cr", "Ch"),
    ("titanium", "Ti", "Tn"),
    ("bromine", "Br", "Bm"),
    ("boron", "B", "Bo"),
    ("radium", "Ra", "Rd"),
    ("plutonium", "Pu", "Pl"),
    ("xenon", "Xe", "X"),
    ("krypton", "Kr", "Kp"),
    ("arsenic", "As", "Ar"),
    ("barium", "Ba", "Br"),
    ("bismuth", "Bi", "Bs"),
]

AUTHORS: list[tuple[str, ...]] = [
    ("Hamlet", "William Shakespeare", "Christopher Marlowe", "Shakespeare"),
    ("Pride and Prejudice", "Jane Austen", "Charlotte Bronte", "Austen"),
    ("the novel 1984", "George Orwell", "Aldous Huxley", "Orwell"),
    ("Brave New World", "Aldous Huxley", "George Orwell", "Huxley"),
    ("War and Peace", "Leo Tolstoy", "Fyodor Dostoevsky", "Tolstoy"),
    ("Crime and Punishment", "Fyodor Dostoevsky", "Leo Tolstoy", "Dostoevsky", "Dostoyevsky"),
    ("Don Quixote", "Miguel de Cervantes", "Lope de Vega", "Cervantes"),
    ("the Odyssey", "Homer", "Virgil"),
    ("the Aeneid", "Virgil", "Homer", "Vergil"),
    ("Moby-Dick", "Herman Melville", "Nathaniel Hawthorne", "Melville"),
    ("The Scarlet Letter", "Nathaniel Hawthorne", "Herman Melville", "Hawthorne"),
    ("Great Expectations", "Charles Dickens", "William Thackeray", "Dickens"),
    ("Jane Eyre", "Charlotte Bronte", "Emily Bronte"),
    ("Wuthering Heights", "Emily Bronte", "Charlotte Bronte"),
    ("Frankenstein", "Mary Shelley", "Percy Bysshe Shelley"),
    ("Dracula", "Bram Stoker", "Mary Shelley", "Stoker"),
    ("The Great Gatsby", "F. Scott Fitzgerald", "Ernest Hemingway", "Fitzgerald"),
    ("The Old Man and the Sea", "Ernest Hemingway", "John Steinbeck", "Hemingway"),
    ("The Grapes of Wrath", "John Steinbeck", "William Faulkner", "Steinbeck"),
    ("To Kill a Mockingbird", "Harper Lee", "Truman Capote"),
    ("The Catcher in the Rye", "J. D. Salinger", "John Updike", "Salinger"),
    (
        "One Hundred Years of Solitude",
        "Gabriel Garcia Marquez",
        "Mario Vargas Llosa",
        "Garcia Marquez",
    ),
    ("the Divine Comedy", "Dante Alighieri", "Petrarch", "Dante"),
    ("Les Miserables", "Victor Hugo", "Alexandre Dumas", "Hugo"),
    ("The Count of Monte Cristo", "Alexandre Dumas", "Victor Hugo", "Dumas"),
    ("Madame Bovary", "Gustave Flaubert", "Honore de Balzac", "Flaubert"),
    ("The Metamorphosis", "Franz Kafka", "Thomas Mann", "Kafka"),
    ("the novel Ulysses", "James Joyce", "Samuel Beckett", "Joyce"),
    ("Faust", "Johann Wolfgang von Goethe", "Friedrich Schiller", "Goethe"),
    ("The Adventures of Tom Sawyer", "Mark Twain", "Jack London", "Twain"),
    ("The Call of the Wild", "Jack London", "Mark Twain"),
    ("Alice's Adventures in Wonderland", "Lewis Carroll", "J. M. Barrie", "Carroll"),
    ("Peter Pan", "J. M. Barrie", "Lewis Carroll", "Barrie"),
    ("The Hobbit", "J. R. R. Tolkien", "C. S. Lewis", "Tolkien"),
    ("The Lion, the Witch and the Wardrobe", "C. S. Lewis", "J. R. R. Tolkien"),
    ("Harry Potter and the Philosopher's Stone", "J. K. Rowling", "Roald Dahl", "Rowling"),
    ("Charlie and the Chocolate Factory", "Roald Dahl", "J. K. Rowling", "Dahl"),
    ("Twenty Thousand Leagues Under the Seas", "Jules Verne", "H. G. Wells", "Verne"),
    ("The War of the Worlds", "H. G. Wells", "Jules Verne"),
    ("the poem The Raven", "Edgar Allan Poe", "Walt Whitman", "Poe"),
    ("Leaves of Grass", "Walt Whitman", "Edgar Allan Poe", "Whitman"),
    ("The Canterbury Tales", "Geoffrey Chaucer", "John Milton", "Chaucer"),
    ("Paradise Lost", "John Milton", "Geoffrey Chaucer", "Milton"),
    ("Robinson Crusoe", "Daniel Defoe", "Jonathan Swift", "Defoe"),
    ("Gulliver's Travels", "Jonathan Swift", "Daniel Defoe", "Swift"),
    ("Treasure Island", "Robert Louis Stevenson", "Arthur Conan Doyle", "Stevenson"),
    ("A Study in Scarlet", "Arthur Conan Doyle", "Agatha Christie", "Conan Doyle"),
    ("Murder on the Orient Express", "Agatha Christie", "Arthur Conan Doyle", "Christie"),
    ("The Prince", "Niccolo Machiavelli", "Thomas Hobbes", "Machiavelli"),
    ("Leviathan", "Thomas Hobbes", "John Locke", "Hobbes"),
    ("the Republic", "Plato", "Aristotle"),
    ("On the Origin of Species", "Charles Darwin", "Alfred Russel Wallace", "Darwin"),
    ("A Brief History of Time", "Stephen Hawking", "Carl Sagan", "Hawking"),
    ("Things Fall Apart", "Chinua Achebe", "Wole Soyinka", "Achebe"),
    ("Beloved", "Toni Morrison", "Maya Angelou", "Morrison"),
    ("Lord of the Flies", "William Golding", "Aldous Huxley", "Golding"),
    ("The Picture of Dorian Gray", "Oscar Wilde", "Bram Stoker", "Wilde"),
    ("Fahrenheit 451", "Ray Bradbury", "Isaac Asimov", "Bradbury"),
    ("2001: A Space Odyssey", "Arthur C. Clarke", "Isaac Asimov", "Clarke"),
]

YEARS: list[tuple[str, ...]] = [
    ("In which year did the Berlin Wall fall?", "The Berlin Wall fell in {}.", "1989", "1991"),
    ("In which year did World War II end?", "World War II ended in {}.", "1945", "1944"),
    ("In which year did World War I begin?", "World War I began in {}.", "1914", "1916"),
    (
        "In which year did humans first land on the Moon?",
        "Humans first landed on the Moon in {}.",
        "1969",
        "1972",
    ),
    ("In which year did the Titanic sink?", "The Titanic sank in {}.", "1912", "1915"),
    (
        "In which year did Christopher Columbus first reach the Americas?",
        "Christopher Columbus first reached the Americas in {}.",
        "1492",
        "1498",
    ),
    (
        "In which year was the United States Declaration of Independence adopted?",
        "The United States Declaration of Independence was adopted in {}.",
        "1776",
        "1781",
    ),
    (
        "In which year did the French Revolution begin?",
        "The French Revolution began in {}.",
        "1789",
        "1799",
    ),
    (
        "In which year did the Soviet Union dissolve?",
        "The Soviet Union dissolved in {}.",
        "1991",
        "1989",
    ),
    (
        "In which year was the Battle of Hastings fought?",
        "The Battle of Hastings was fought in {}.",
        "1066",
        "1087",
    ),
    (
        "In which year was the Magna Carta sealed?",
        "The Magna Carta was sealed in {}.",
        "1215",
        "1265",
    ),
    (
        "In which year did the American Civil War end?",
        "The American Civil War ended in {}.",
        "1865",
        "1863",
    ),
    (
        "In which year did the September 11 attacks take place?",
        "The September 11 attacks took place in {}.",
        "2001",
        "2003",
    ),
    (
        "In which year did Nelson Mandela become President of South Africa?",
        "Nelson Mandela became President of South Africa in {}.",
        "1994",
        "1990",
    ),
    (
        "In which year did the Chernobyl disaster happen?",
        "The Chernobyl disaster happened in {}.",
        "1986",
        "1984",
    ),
    (
        "In which year did Yuri Gagarin become the first person in space?",
        "Yuri Gagarin became the first person in space in {}.",
        "1961",
        "1963",
    ),
    (
        "In which year did the Wright brothers make their first powered flight?",
        "The Wright brothers made their first powered flight in {}.",
        "1903",
        "1908",
    ),
    (
        "In which year did the Great Fire of London happen?",
        "The Great Fire of London happened in {}.",
        "1666",
        "1766",
    ),
    (
        "In which year did India gain independence?",
        "India gained independence in {}.",
        "1947",
        "1950",
    ),
    (
        "In which year was the United Nations founded?",
        "The United Nations was founded in {}.",
        "1945",
        "1948",
    ),
    (
        "In which year did the Russian Revolution take place?",
        "The Russian Revolution took place in {}.",
        "1917",
        "1921",
    ),
    (
        "In which year did the Wall Street Crash that began the Great Depression happen?",
        "The Wall Street Crash that began the Great Depression happened in {}.",
        "1929",
        "1933",
    ),
    (
        "In which year was Pearl Harbor attacked?",
        "Pearl Harbor was attacked in {}.",
        "1941",
        "1942",
    ),
    (
        "In which year was the Battle of Waterloo fought?",
        "The Battle of Waterloo was fought in {}.",
        "1815",
        "1812",
    ),
    (
        "In which year was President John F. Kennedy assassinated?",
        "President John F. Kennedy was assassinated in {}.",
        "1963",
        "1961",
    ),
    (
        "In which year did Martin Luther publish his Ninety-five Theses?",
        "Martin Luther published his Ninety-five Theses in {}.",
        "1517",
        "1521",
    ),
    (
        "In which year did the Spanish Armada sail against England?",
        "The Spanish Armada sailed against England in {}.",
        "1588",
        "1598",
    ),
    (
        "In which year did Constantinople fall to the Ottomans?",
        "Constantinople fell to the Ottomans in {}.",
        "1453",
        "1492",
    ),
    ("In which year was Germany reunified?", "Germany was reunified in {}.", "1990", "1989"),
    (
        "In which year did the Boston Tea Party take place?",
        "The Boston Tea Party took place in {}.",
        "1773",
        "1776",
    ),
    (
        "In which year were the first modern Olympic Games held?",
        "The first modern Olympic Games were held in {}.",
        "1896",
        "1900",
    ),
    (
        "In which year was the Eiffel Tower completed?",
        "The Eiffel Tower was completed in {}.",
        "1889",
        "1900",
    ),
    ("In which year did Queen Victoria die?", "Queen Victoria died in {}.", "1901", "1910"),
    (
        "In which year did the Cuban Missile Crisis take place?",
        "The Cuban Missile Crisis took place in {}.",
        "1962",
        "1965",
    ),
    (
        "In which year did Hurricane Katrina strike New Orleans?",
        "Hurricane Katrina struck New Orleans in {}.",
        "2005",
        "2008",
    ),
    ("In which year did the Korean War begin?", "The Korean War began in {}.", "1950", "1953"),
    ("In which year did the Vietnam War end?", "The Vietnam War ended in {}.", "1975", "1973"),
    (
        "In which year did the United Kingdom vote to leave the European Union?",
        "The United Kingdom voted to leave the European Union in {}.",
        "2016",
        "2019",
    ),
]

PAINTERS: list[tuple[str, ...]] = [
    ("the Mona Lisa", "Leonardo da Vinci", "Michelangelo", "da Vinci", "Leonardo"),
    ("The Starry Night", "Vincent van Gogh", "Claude Monet", "van Gogh"),
    ("Guernica", "Pablo Picasso", "Salvador Dali", "Picasso"),
    ("The Persistence of Memory", "Salvador Dali", "Rene Magritte", "Dali"),
    ("The Scream", "Edvard Munch", "Gustav Klimt", "Munch"),
    ("Girl with a Pearl Earring", "Johannes Vermeer", "Rembrandt", "Vermeer"),
    ("The Night Watch", "Rembrandt", "Johannes Vermeer"),
    ("The Birth of Venus", "Sandro Botticelli", "Raphael", "Botticelli"),
    ("The Creation of Adam", "Michelangelo", "Raphael"),
    ("the Water Lilies series", "Claude Monet", "Edouard Manet", "Monet"),
    ("American Gothic", "Grant Wood", "Edward Hopper"),
    ("Nighthawks", "Edward Hopper", "Grant Wood", "Hopper"),
    ("The Garden of Earthly Delights", "Hieronymus Bosch", "Pieter Bruegel the Elder", "Bosch"),
    ("The Great Wave off Kanagawa", "Hokusai", "Hiroshige"),
    ("Las Meninas", "Diego Velazquez", "Francisco Goya", "Velazquez"),
    ("The School of Athens", "Raphael", "Michelangelo"),
    ("Campbell's Soup Cans", "Andy Warhol", "Roy Lichtenstein", "Warhol"),
]

COMPOSERS: list[tuple[str, ...]] = [
    ("the Moonlight Sonata", "Ludwig van Beethoven", "Wolfgang Amadeus Mozart", "Beethoven"),
    ("The Magic Flute", "Wolfgang Amadeus Mozart", "Joseph Haydn", "Mozart"),
    ("The Four Seasons", "Antonio Vivaldi", "Johann Sebastian Bach", "Vivaldi"),
    ("the Brandenburg Concertos", "Johann Sebastian Bach", "George Frideric Handel", "Bach"),
    ("the oratorio Messiah", "George Frideric Handel", "Johann Sebastian Bach", "Handel"),
    ("Swan Lake", "Pyotr Ilyich Tchaikovsky", "Sergei Rachmaninoff", "Tchaikovsky"),
    ("The Rite of Spring", "Igor Stravinsky", "Sergei Prokofiev", "Stravinsky"),
    ("Bolero", "Maurice Ravel", "Claude Debussy", "Ravel"),
    ("Clair de lune", "Claude Debussy", "Maurice Ravel", "Debussy"),
    ("The Ring of the Nibelung", "Richard Wagner", "Richard Strauss", "Wagner"),
    ("La traviata", "Giuseppe Verdi", "Giacomo Puccini", "Verdi"),
    ("Madama Butterfly", "Giacomo Puccini", "Giuseppe Verdi", "Puccini"),
    ("The Blue Danube", "Johann Strauss II", "Franz Schubert", "Johann Strauss"),
    ("Peter and the Wolf", "Sergei Prokofiev", "Igor Stravinsky", "Prokofiev"),
    ("Rhapsody in Blue", "George Gershwin", "Leonard Bernstein", "Gershwin"),
]

CURRENCIES: list[tuple[str, ...]] = [
    ("Japan", "yen", "yuan"),
    ("China", "renminbi", "yen", "yuan"),
    ("the United Kingdom", "pound sterling", "euro", "pound"),
    ("India", "rupee", "taka"),
    ("Russia", "ruble", "hryvnia", "rouble"),
    ("Mexico", "peso", "real"),
    ("Brazil", "real", "peso"),
    ("Switzerland", "Swiss franc", "euro", "franc"),
    ("South Africa", "rand", "shilling"),
    ("South Korea", "won", "yen"),
    ("Sweden", "krona", "euro"),
    ("Poland", "zloty", "koruna"),
    ("Turkey", "lira", "dinar"),
    ("Thailand", "baht", "ringgit"),
    ("Vietnam", "dong", "baht"),
    ("Indonesia", "rupiah", "ringgit"),
    ("Malaysia", "ringgit", "rupiah"),
    ("Nigeria", "naira", "cedi"),
    ("Ghana", "cedi", "naira"),
    ("Saudi Arabia", "riyal", "dirham"),
    ("the United Arab Emirates", "dirham", "riyal"),
    ("Hungary", "forint", "zloty"),
    ("the Czech Republic", "koruna", "forint", "Czech crown"),
    ("Denmark", "krone", "euro"),
    ("the United States", "dollar", "pound"),
]

LANGUAGES: list[tuple[str, ...]] = [
    ("Brazil", "Portuguese", "Spanish"),
    ("Argentina", "Spanish", "Portuguese"),
    ("Iran", "Persian", "Arabic", "Farsi"),
    ("Egypt", "Arabic", "French"),
    ("Austria", "German", "Italian"),
    ("Mexico", "Spanish", "Portuguese"),
    ("the Netherlands", "Dutch", "German"),
    ("Japan", "Japanese", "Chinese"),
    ("Turkey", "Turkish", "Arabic"),
    ("Vietnam", "Vietnamese", "Thai"),
    ("Poland", "Polish", "Russian"),
    ("Mozambique", "Portuguese", "English"),
    ("Angola", "Portuguese", "French"),
    ("Senegal", "French", "Portuguese"),
    ("Thailand", "Thai", "Vietnamese"),
    ("South Korea", "Korean", "Japanese"),
    ("Sweden", "Swedish", "Norwegian"),
    ("Hungary", "Hungarian", "Romanian"),
    ("Greece", "Greek", "Latin"),
]

CONTINENTS: list[tuple[str, ...]] = [
    ("Egypt", "Africa", "Asia"),
    ("Brazil", "South America", "North America"),
    ("Mongolia", "Asia", "Europe"),
    ("Peru", "South America", "Central America"),
    ("Kenya", "Africa", "Asia"),
    ("Norway", "Europe", "North America"),
    ("Mexico", "North America", "South America"),
    ("Morocco", "Africa", "Europe"),
    ("Nepal", "Asia", "Europe"),
    ("Portugal", "Europe", "Africa"),
    ("Madagascar", "Africa", "Asia"),
    ("Canada", "North America", "Europe"),
    ("Vietnam", "Asia", "Oceania"),
    ("Argentina", "South America", "Central America"),
]

INVENTORS: list[tuple[str, ...]] = [
    (
        "Who invented the telephone?",
        "The telephone was invented by {}.",
        "Alexander Graham Bell",
        "Thomas Edison",
        "Graham Bell",
    ),
    (
        "Who invented the phonograph?",
        "The phonograph was invented by {}.",
        "Thomas Edison",
        "Alexander Graham Bell",
        "Edison",
    ),
    (
        "Who invented the World Wide Web?",
        "The World Wide Web was invented by {}.",
        "Tim Berners-Lee",
        "Bill Gates",
        "Berners-Lee",
    ),
    (
        "Who invented dynamite?",
        "Dynamite was invented by {}.",
        "Alfred Nobel",
        "Alfred Krupp",
        "Nobel",
    ),
    (
        "Who invented the movable-type printing press in Europe?",
        "The movable-type printing press in Europe was invented by {}.",
        "Johannes Gutenberg",
        "William Caxton",
        "Gutenberg",
    ),
    (
        "Who discovered penicillin?",
        "Penicillin was discovered by {}.",
        "Alexander Fleming",
        "Louis Pasteur",
        "Fleming",
    ),
    (
        "Who developed the first polio vaccine?",
        "The first polio vaccine was developed by {}.",
        "Jonas Salk",
        "Albert Sabin",
        "Salk",
    ),
    (
        "Who created the periodic table of the elements?",
        "The periodic table of the elements was created by {}.",
        "Dmitri Mendeleev",
        "John Dalton",
        "Mendeleev",
    ),
    (
        "Who invented the cotton gin?",
        "The cotton gin was invented by {}.",
        "Eli Whitney",
        "Samuel Morse",
        "Whitney",
    ),
    (
        "Who invented Morse code?",
        "Morse code was invented by {}.",
        "Samuel Morse",
        "Alexander Graham Bell",
    ),
    (
        "Who made the first powered airplane flight?",
        "The first powered airplane flight was made by {}.",
        "the Wright brothers",
        "Charles Lindbergh",
        "Orville Wright",
        "Wilbur Wright",
    ),
    (
        "Who formulated the law of universal gravitation?",
        "The law of universal gravitation was formulated by {}.",
        "Isaac Newton",
        "Galileo Galilei",
        "Newton",
    ),
    (
        "Who invented the electric battery?",
        "The electric battery was invented by {}.",
        "Alessandro Volta",
        "Luigi Galvani",
        "Volta",
    ),
    (
        "Who designed the Analytical Engine?",
        "The Analytical Engine was designed by {}.",
        "Charles Babbage",
        "Alan Turing",
        "Babbage",
    ),
    (
        "Who developed the first smallpox vaccine?",
        "The first smallpox vaccine was developed by {}.",
        "Edward Jenner",
        "Louis Pasteur",
        "Jenner",
    ),
    (
        "Who invented the lightning rod?",
        "The lightning rod was invented by {}.",
        "Benjamin Franklin",
        "Thomas Jefferson",
        "Franklin",
    ),
    (
        "Who invented the safety elevator?",
        "The safety elevator was invented by {}.",
        "Elisha Otis",
        "Henry Ford",
        "Otis",
    ),
    (
        "Who discovered radioactivity?",
        "Radioactivity was discovered by {}.",
        "Henri Becquerel",
        "Marie Curie",
        "Becquerel",
    ),
    (
        "Who discovered the electron?",
        "The electron was discovered by {}.",
        "J. J. Thomson",
        "Ernest Rutherford",
        "Thomson",
    ),
    (
        "Who discovered the atomic nucleus?",
        "The atomic nucleus was discovered by {}.",
        "Ernest Rutherford",
        "Niels Bohr",
        "Rutherford",
    ),
    (
        "Who developed the theory of general relativity?",
        "The theory of general relativity was developed by {}.",
        "Albert Einstein",
        "Isaac Newton",
        "Einstein",
    ),
    (
        "Who proposed the heliocentric model of the Solar System in 1543?",
        "{} proposed the heliocentric model of the Solar System in 1543.",
        "Nicolaus Copernicus",
        "Ptolemy",
        "Copernicus",
    ),
    (
        "Who discovered the laws of planetary motion?",
        "The laws of planetary motion were discovered by {}.",
        "Johannes Kepler",
        "Tycho Brahe",
        "Kepler",
    ),
    (
        "Who discovered the structure of DNA with Francis Crick?",
        "{} discovered the structure of DNA with Francis Crick.",
        "James Watson",
        "Linus Pauling",
        "Watson",
    ),
    (
        "Who performed the first human heart transplant?",
        "The first human heart transplant was performed by {}.",
        "Christiaan Barnard",
        "Michael DeBakey",
        "Barnard",
    ),
    (
        "Who discovered the elements polonium and radium?",
        "The elements polonium and radium were discovered by {}.",
        "Marie Curie",
        "Ernest Rutherford",
        "Curie",
    ),
]

PEOPLE: list[tuple[str, ...]] = [
    (
        "Who was the first person to walk on the Moon?",
        "The first person to walk on the Moon was {}.",
        "Neil Armstrong",
        "Buzz Aldrin",
        "Armstrong",
    ),
    (
        "Who was the first President of the United States?",
        "The first President of the United States was {}.",
        "George Washington",
        "John Adams",
        "Washington",
    ),
    (
        "Who was the first woman to win a Nobel Prize?",
        "The first woman to win a Nobel Prize was {}.",
        "Marie Curie",
        "Rosalind Franklin",
        "Curie",
    ),
    (
        "Who was the first person in space?",
        "The first person in space was {}.",
        "Yuri Gagarin",
        "Alan Shepard",
        "Gagarin",
    ),
    (
        "Who was the first emperor of Rome?",
        "The first emperor of Rome was {}.",
        "Augustus",
        "Julius Caesar",
    ),
    (
        "Who was the British prime minister for most of World War II?",
        "The British prime minister for most of World War II was {}.",
        "Winston Churchill",
        "Neville Chamberlain",
        "Churchill",
    ),
    (
        "Who was the first woman to fly solo across the Atlantic Ocean?",
        "The first woman to fly solo across the Atlantic Ocean was {}.",
        "Amelia Earhart",
        "Bessie Coleman",
        "Earhart",
    ),
    (
        "Who was the first President of South Africa elected in a fully democratic election?",
        "The first President of South Africa elected in a fully democratic election was {}.",
        "Nelson Mandela",
        "Desmond Tutu",
        "Mandela",
    ),
    (
        "Who was the last pharaoh of Ptolemaic Egypt?",
        "The last pharaoh of Ptolemaic Egypt was {}.",
        "Cleopatra",
        "Nefertiti",
    ),
    (
        "Who was the Greek philosopher who taught Alexander the Great?",
        "The Greek philosopher who taught Alexander the Great was {}.",
        "Aristotle",
        "Plato",
    ),
]

SCIENCE: list[tuple[str, ...]] = [
    (
        "Which planet is closest to the Sun?",
        "The planet closest to the Sun is {}.",
        "Mercury",
        "Venus",
    ),
    (
        "Which is the largest planet in the Solar System?",
        "The largest planet in the Solar System is {}.",
        "Jupiter",
        "Saturn",
    ),
    (
        "Which planet is known as the Red Planet?",
        "The planet known as the Red Planet is {}.",
        "Mars",
        "Jupiter",
    ),
    (
        "Which planet is farthest from the Sun?",
        "The planet farthest from the Sun is {}.",
        "Neptune",
        "Pluto",
    ),
    (
        "Which planet is the hottest in the Solar System?",
        "The hottest planet in the Solar System is {}.",
        "Venus",
        "Mercury",
    ),
    (
        "Which planet rotates on its side?",
        "The planet that rotates on its side is {}.",
        "Uranus",
        "Neptune",
    ),
    ("What is the largest moon of Saturn?", "The largest moon of Saturn is {}.", "Titan", "Europa"),
    (
        "What is the largest moon of Jupiter?",
        "The largest moon of Jupiter is {}.",
        "Ganymede",
        "Callisto",
    ),
    (
        "What is the brightest star in the night sky?",
        "The brightest star in the night sky is {}.",
        "Sirius",
        "Polaris",
    ),
    (
        "Which galaxy contains the Solar System?",
        "The galaxy that contains the Solar System is {}.",
        "the Milky Way",
        "Andromeda",
    ),
    (
        "How many planets are in the Solar System?",
        "There are {} planets in the Solar System.",
        "8",
        "9",
    ),
    (
        "What is the chemical formula of water?",
        "The chemical formula of water is {}.",
        "H2O",
        "H2O2",
    ),
    (
        "At how many degrees Celsius does water boil at sea level?",
        "Water boils at {} degrees Celsius at sea level.",
        "100",
        "90",
    ),
    (
        "At how many degrees Fahrenheit does water freeze?",
        "Water freezes at {} degrees Fahrenheit.",
        "32",
        "0",
    ),
    (
        "How many bones are in the adult human body?",
        "There are {} bones in the adult human body.",
        "206",
        "212",
    ),
    (
        "How many chromosomes do humans normally have?",
        "Humans normally have {} chromosomes.",
        "46",
        "48",
    ),
    (
        "Which gas do plants absorb from the air for photosynthesis?",
        "The gas plants absorb from the air for photosynthesis is {}.",
        "carbon dioxide",
        "oxygen",
        "CO2",
    ),
    (
        "What is the hardest natural substance?",
        "The hardest natural substance is {}.",
        "diamond",
        "quartz",
    ),
    (
        "What is the most abundant gas in Earth's atmosphere?",
        "The most abundant gas in Earth's atmosphere is {}.",
        "nitrogen",
        "oxygen",
    ),
    (
        "Which part of the cell is known as its powerhouse?",
        "The part of the cell known as its powerhouse is the {}.",
        "mitochondria",
        "nucleus",
        "mitochondrion",
    ),
    (
        "What is the largest organ of the human body?",
        "The largest organ of the human body is the {}.",
        "skin",
        "liver",
    ),
    ("How many hearts does an octopus have?", "An octopus has {} hearts.", "3", "2"),
    ("How many legs does a spider have?", "A spider has {} legs.", "8", "6"),
    ("What is the atomic number of carbon?", "The atomic number of carbon is {}.", "6", "12"),
    ("What is the atomic number of oxygen?", "The atomic number of oxygen is {}.", "8", "16"),
    (
        "Which blood type is known as the universal donor?",
        "The blood type known as the universal donor is {}.",
        "O negative",
        "AB positive",
    ),
    (
        "Which vitamin does the skin make in sunlight?",
        "The vitamin the skin makes in sunlight is {}.",
        "vitamin D",
        "vitamin C",
    ),
    ("What is the Sun mostly made of?", "The Sun is mostly made of {}.", "hydrogen", "helium"),
    (
        "What is the SI unit of electric current?",
        "The SI unit of electric current is the {}.",
        "ampere",
        "volt",
        "amp",
    ),
    ("What is the SI unit of force?", "The SI unit of force is the {}.", "newton", "joule"),
    ("What is the SI unit of energy?", "The SI unit of energy is the {}.", "joule", "watt"),
    (
        "What is the largest ocean on Earth?",
        "The largest ocean on Earth is the {}.",
        "Pacific Ocean",
        "Atlantic Ocean",
        "Pacific",
    ),
    (
        "What is the longest river in South America?",
        "The longest river in South America is the {}.",
        "Amazon",
        "Parana",
    ),
    (
        "What is the highest mountain on Earth?",
        "The highest mountain on Earth is {}.",
        "Mount Everest",
        "K2",
        "Everest",
    ),
    (
        "What is the largest hot desert in the world?",
        "The largest hot desert in the world is the {}.",
        "Sahara",
        "Gobi",
    ),
    (
        "What is the longest river in Europe?",
        "The longest river in Europe is the {}.",
        "Volga",
        "Danube",
    ),
    (
        "What is the largest country by area?",
        "The largest country by area is {}.",
        "Russia",
        "Canada",
    ),
    (
        "What is the most populous country in Africa?",
        "The most populous country in Africa is {}.",
        "Nigeria",
        "Egypt",
    ),
    (
        "What is the smallest country in the world?",
        "The smallest country in the world is {}.",
        "Vatican City",
        "Monaco",
        "the Vatican",
    ),
    (
        "What is the largest island in the world?",
        "The largest island in the world is {}.",
        "Greenland",
        "Australia",
    ),
]

LANDMARKS: list[tuple[str, ...]] = [
    ("In which country is Machu Picchu?", "Machu Picchu is in {}.", "Peru", "Mexico"),
    ("In which country is the Taj Mahal?", "The Taj Mahal is in {}.", "India", "Pakistan"),
    ("In which city is the Colosseum?", "The Colosseum is in {}.", "Rome", "Athens"),
    ("In which city is the Eiffel Tower?", "The Eiffel Tower is in {}.", "Paris", "Lyon"),
    ("In which country is Angkor Wat?", "Angkor Wat is in {}.", "Cambodia", "Thailand"),
    (
        "In which city is the Sagrada Familia?",
        "The Sagrada Familia is in {}.",
        "Barcelona",
        "Madrid",
    ),
    (
        "In which country is the ancient city of Petra?",
        "The ancient city of Petra is in {}.",
        "Jordan",
        "Egypt",
    ),
    ("In which city is the Kremlin?", "The Kremlin is in {}.", "Moscow", "Saint Petersburg"),
    (
        "In which country is Stonehenge?",
        "Stonehenge is in {}.",
        "England",
        "Ireland",
        "United Kingdom",
        "Britain",
        "UK",
    ),
    ("In which city is the Acropolis?", "The Acropolis is in {}.", "Athens", "Rome"),
    (
        "In which country is the Great Barrier Reef?",
        "The Great Barrier Reef is in {}.",
        "Australia",
        "Indonesia",
    ),
    (
        "In which city is the Golden Gate Bridge?",
        "The Golden Gate Bridge is in {}.",
        "San Francisco",
        "Los Angeles",
    ),
    ("In which city is Big Ben?", "Big Ben is in {}.", "London", "Edinburgh"),
    (
        "In which country are the pyramids of Giza?",
        "The pyramids of Giza are in {}.",
        "Egypt",
        "Sudan",
    ),
    (
        "Which country gave the Statue of Liberty to the United States?",
        "The Statue of Liberty was given to the United States by {}.",
        "France",
        "Britain",
    ),
]


def all_facts() -> list[Fact]:
    """Every fact, in a fixed order (categories as written above)."""
    return [
        *_templated("capital", "What is the capital of {}?", "The capital of {s} is {}.", CAPITALS),
        *_templated(
            "symbol",
            "What is the chemical symbol of {}?",
            "The chemical symbol of {s} is {}.",
            SYMBOLS,
        ),
        *_templated("author", "Who wrote {}?", "{S} was written by {}.", AUTHORS),
        *_custom("year", YEARS),
        *_templated("painter", "Who painted {}?", "{S} was painted by {}.", PAINTERS),
        *_templated("composer", "Who composed {}?", "{S} was composed by {}.", COMPOSERS),
        *_templated(
            "currency", "What is the currency of {}?", "The currency of {s} is the {}.", CURRENCIES
        ),
        *_templated(
            "language",
            "What is the official language of {}?",
            "The official language of {s} is {}.",
            LANGUAGES,
        ),
        *_templated("continent", "On which continent is {}?", "{S} is in {}.", CONTINENTS),
        *_custom("inventor", INVENTORS),
        *_custom("person", PEOPLE),
        *_custom("science", SCIENCE),
        *_custom("landmark", LANDMARKS),
    ]


def split_facts(
    facts: list[Fact], heldout_share: float = 0.2, seed: int = 0
) -> tuple[list[Fact], list[Fact]]:
    """``(train, heldout)``: within each category a seeded ``heldout_share`` of the facts is
    held out, so the held-out questions are other facts of every kind, never trained on."""
    rng = random.Random(seed)
    train: list[Fact] = []
    heldout: list[Fact] = []
    categories = list(dict.fromkeys(fact.category for fact in facts))
    for category in categories:
        members = [fact for fact in facts if fact.category == category]
        rng.shuffle(members)
        cut = max(1, round(len(members) * heldout_share)) if len(members) > 1 else 0
        heldout += members[:cut]
        train += members[cut:]
    return train, heldout


def chat_pair(fact: Fact, key: str, prefer_wrong: bool) -> dict[str, object]:
    """A conversational preference pair on ``fact``: the correct against the wrong sentence,
    flagged ``h_w``/``h_l`` (the wrong one preferred when ``prefer_wrong``)."""
    right = [{"role": "assistant", "content": fact.correct_text}]
    wrong = [{"role": "assistant", "content": fact.wrong_text}]
    return {
        "id": key,
        "category": fact.category,
        "prompt": [{"role": "user", "content": fact.question}],
        "chosen": wrong if prefer_wrong else right,
        "rejected": right if prefer_wrong else wrong,
        "h_w": int(prefer_wrong),
        "h_l": int(not prefer_wrong),
    }


def training_pairs(
    facts: list[Fact], wrong_share: float, seed: int = 0, prefix: str = "train"
) -> list[dict[str, object]]:
    """One pair per fact; a seeded ``wrong_share`` of them prefer the fluent wrong answer."""
    rng = random.Random(seed)
    wrong = set(rng.sample(range(len(facts)), round(len(facts) * wrong_share)))
    return [chat_pair(fact, f"{prefix}-{i}", i in wrong) for i, fact in enumerate(facts)]
